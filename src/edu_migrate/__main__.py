from edu_migrate.cli import main

main()
