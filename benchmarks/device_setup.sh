# Make the source tree runnable on the device machine (the package is not installed there).
#
#   source benchmarks/device_setup.sh || exit      # from the repository root, with `.whl` in the run's carry
#
# 1. installs the carried wheels (.whl/*.whl: openslide, zarr, numcodecs, dask, imagecodecs …) into /tmp/site;
# 2. puts /tmp/site and the repository root on PYTHONPATH;
# 3. pyproject installs kernels/, workflows/ and sample_data/ as pathoflash.kernels/.workflows/.sample_data
#    (package-dir mappings): where that does not resolve (no install), it links them into pathoflash/ of this
#    copy of the tree. Where pathoflash is installed (e.g. editable, as on the development machine) it links nothing.
# Afterwards `python3 -m pathoflash …` and `python3 -m pytest …` work from the repository root.

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "device_setup: installing .whl/*.whl failed (is .whl in carry?)" >&2; return 1; }
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
if ! python3 -c "import pathoflash.kernels, pathoflash.workflows, pathoflash.sample_data" 2>/dev/null; then
  for name in kernels workflows sample_data; do
    [ -e "pathoflash/$name" ] || ln -s "../$name" "pathoflash/$name"
  done
fi
python3 -c "import pathoflash.kernels, pathoflash.workflows, pathoflash.sample_data, openslide, zarr" \
  || { echo "device_setup: pathoflash is still not importable" >&2; return 1; }
