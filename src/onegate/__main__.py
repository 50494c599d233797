from onegate.cli import main

main()
