from valux.main import main

main()
