"""Choose where to cut a model for a device, a server and a link."""
