pytest_plugins = ["tests.database"]
