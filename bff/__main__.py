from bff.main import main

main()
