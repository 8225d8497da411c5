from llmrec.cli.main import main

raise SystemExit(main())
