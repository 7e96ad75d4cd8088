"""`python -m bfcnn.train --model-directory DIR --pipeline-config FILE`: the original project's command."""

from . import main

raise SystemExit(main())
