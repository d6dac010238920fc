"""Where mail comes in: the sources and the pipeline every mail runs through."""
