"""The ``ttlpolicy`` command line: one small module per subcommand, all calling the library."""
