from python_udfs.corpus.ingest import main

raise SystemExit(main())
