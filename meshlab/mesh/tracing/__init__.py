"""The mesh's trace collector: a small in-memory Zipkin (``meshlab tracing-collector``, Service ``zipkin``)."""
