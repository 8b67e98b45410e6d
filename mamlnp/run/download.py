"""``python -m mamlnp download omniglot [--data-dir D]``: fetch a dataset on request.

Omniglot: the two official zips of brendenlake/omniglot (python/images_background.zip,
python/images_evaluation.zip) with pooch, SHA-256 checked, with a progress bar, into the data
folder (``--data-dir``, else $MAMLNP_DATA_DIR, else the user cache folder). Sets already there
(zip or extracted folder) are kept; the copy is then checked by its structure (50 alphabets,
1623 characters, 20 drawings each) and preprocessed once into the cache.
"""
import sys


def add_arguments(p):
    p.add_argument("dataset", choices=("omniglot",), help="the dataset to fetch")
    p.add_argument("--data-dir", default=None, help="where to put it (default $MAMLNP_DATA_DIR, "
                   "else the user cache folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args):
    from ..tasks import omniglot_data as data
    from ..tasks.omniglot import OmniglotTasks
    folder = data.download(args.data_dir, progressbar=not args.no_progress and sys.stderr.isatty())
    family = OmniglotTasks(folder)                     # checks the structure, fills the cache
    print(f"omniglot: {len(family.keys)} characters in {folder}; preprocessed cache in "
          f"{family.cache_dir}")
    return 0
