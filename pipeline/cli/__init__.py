"""The ``zssr`` command: ``main`` dispatches to the ``cmd_*`` subcommands (and to those
registered under the ``zssr.commands`` entry point, such as ``zssr batch``); ``options``
holds the options they share.  The top floor: nothing in :mod:`pipeline` imports it."""
