//! Request body decompression with bounded output (being built).
