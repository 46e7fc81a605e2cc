"""legion-ci's version, on the bottom floor so that any module can name it without loading the
public API behind `legion_ci`."""

__version__ = "0.1.0"
