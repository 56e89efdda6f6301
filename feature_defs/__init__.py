"""The feature sets of this project: every module here is discovered by the catalog."""
