"""The index: its layout and manifest (store), BM25 (keyword), FAISS (dense), writing (writer) and bringing it
in line with the files (sync)."""
