from cnnlab.cli import entry_point

entry_point()
