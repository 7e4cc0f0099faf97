"""The directories hardware/ and models/ install as the packages nnos_hardware and nnos_models:
one distribution, no top-level name another package could also claim (pyproject.toml has the
rest)."""
from setuptools import find_packages, setup

MAPPED = {"hardware": "nnos_hardware", "models": "nnos_models"}

packages = find_packages(include=["nnos", "nnos.*"])
package_dir = {}
for directory, name in MAPPED.items():
    package_dir[name] = directory
    packages += [name + p[len(directory):] for p in find_packages(include=[directory, directory + ".*"])]

setup(packages=packages, package_dir=package_dir,
      package_data={"nnos_hardware": ["boards/*.toml", "registers/*/*.toml", "PROTOCOL.md"]})
