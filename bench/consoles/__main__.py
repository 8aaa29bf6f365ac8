from bench.consoles.run import main

main()
