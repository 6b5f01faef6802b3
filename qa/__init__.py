"""docqa: offline, document-grounded question answering with exact citations."""
from __future__ import annotations

from qa.api import Answer, Retriever, build_index, retrieve
from qa.citations import Context
from qa.config import Settings
from qa.errors import QAError
from qa.records import Chunk, Document, IndexReport, Passage

__all__ = ["Answer", "Chunk", "Context", "Document", "IndexReport", "Passage", "QAError", "Retriever", "Settings",
           "build_index", "retrieve"]
