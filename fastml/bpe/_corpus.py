"""The King James Bible as a real training corpus, from the Debian package bible-kjv.

NOTE: this loader belongs in fastml/datasets.py with the other real-data loaders; it lives here
until it moves there.
"""

import functools
import shutil
import subprocess

KJV_INSTALL = "apt-get install -y bible-kjv"


@functools.cache
def load_kjv():
    """Return the KJV text (about 4.1 MB, ASCII): one verse per line, without the references.

    Raises FileNotFoundError with the install command when the `bible` program is missing.
    """
    program = shutil.which("bible")
    if program is None:
        raise FileNotFoundError(f"the `bible` program of Debian's bible-kjv is missing; {KJV_INSTALL}")
    output = subprocess.run(
        [program, "-f", "gen1:1-rev22:21"], capture_output=True, text=True, check=True
    ).stdout
    # Each line is "Ge1:1 In the beginning ..."; the first field is the reference.
    return "".join(line.partition(" ")[2] + "\n" for line in output.splitlines())
