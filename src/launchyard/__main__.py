from launchyard.cli.main import main

main()
