from python_udfs.scan.scanner import main

main()
