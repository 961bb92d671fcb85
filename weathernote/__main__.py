from weathernote.cli import main

raise SystemExit(main())
