"""autointerp: name, group, validate and publish the features of sparse autoencoders."""

__version__ = "0.1.0"
