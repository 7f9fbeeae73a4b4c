from pagi.cli import main

main()
