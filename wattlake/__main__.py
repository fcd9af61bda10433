from wattlake.cli import main

main()
