"""The toolkit's benchmarks, one module per family of ``scripts/bench.py`` sub-commands.

Each module exposes ``SUBCOMMANDS``: sub-command name -> (``configure(parser)``, ``run(args) ->
exit status``); every result is one JSON line on stdout, written by :func:`.common.emit`. None of
this is library code: the library (``llmrec``, ``retrieval``) never imports it.
"""
