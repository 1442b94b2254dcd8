from byok_middleware.cli import main

raise SystemExit(main())
