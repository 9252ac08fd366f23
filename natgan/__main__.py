from natgan.cli import main

main()
