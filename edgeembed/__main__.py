from edgeembed.cli import main

main()
