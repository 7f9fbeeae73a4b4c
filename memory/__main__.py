from memory.main import main

main()
