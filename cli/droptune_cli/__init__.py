"""The droptune command-line tool."""
