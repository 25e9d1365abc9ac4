import os
import sys

# `python -m` puts the current directory first on sys.path; a project with a
# folder named modules/ (common in Terraform and Ansible repos) would then
# shadow our modules package. Our own root goes first instead.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from provisioner.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
