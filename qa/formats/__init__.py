"""Format readers of the load stage: PDF, Word (DOCX) and HTML to plain text, and the normalisation they share."""
