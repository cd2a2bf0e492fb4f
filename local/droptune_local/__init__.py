"""The local cloud: emulators, the functions under functions-framework, a ticker, one command.

Nothing in the library or the services imports this package: production and the local stack
differ only in configuration.
"""
