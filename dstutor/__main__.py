"""`python -m dstutor COMMAND ...` (and `torchrun -m dstutor pretrain ...`): the `dstutor` command."""
import sys

from dstutor.commands import main

sys.exit(main())
