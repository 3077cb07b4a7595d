"""The one exception type of export, importable without torch."""


class ExportError(ValueError):
    """A model, or one of its NC layers, that the exporter cannot write faithfully; the message names
    the layer (or node) and the reason."""
