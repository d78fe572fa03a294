from valux.sandbox.cli import main

raise SystemExit(main())
