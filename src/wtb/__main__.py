from wtb.cli.main import main

main()
