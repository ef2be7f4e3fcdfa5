"""cnnlab's search-path plugin: the recipe folders of ``CNNLAB_RECIPES``."""
