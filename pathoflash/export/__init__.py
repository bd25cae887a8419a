"""Writers for a :class:`~pathoflash.heatmap.Heatmap`; call them through its ``to_*`` methods.

=================  ==========================================================================================
``png``            ``heatmap.png`` — thumbnail with the heatmap blended in, colour bar, scale bar
``geojson``        ``heatmap.geojson`` — QuPath annotations (tumor regions with holes), optional tile objects
``contours``       marching squares at the threshold, linked into rings with numpy/scipy (same rings as skimage)
``rings``          ring geometry in bulk: signed areas, point-in-ring batches, holes assigned to exteriors
``geojson_text``   the GeoJSON's coordinate, probability and id text, formatted in numpy
``tiff``           ``heatmap.tif`` — tiled pyramidal palette TIFF in the slide's frame (OpenSlide/QuPath)
``viewer``         ``viewer.html`` — one self-contained pan/zoom viewer (template ``viewer.html``/``viewer.js``)
``summary``        ``summary.json`` — tumor area, tumor fraction of tissue, max probability, provenance
``zarr_array``     the heatmap array (+ geometry attrs) in a Zarr v3 group
``colormap``       the viridis-like lookup table every format shares
``sampling``       heatmap → other pixel grids (nearest up, NaN-aware block mean down), window by window
``atomic``         temp-name-then-rename writes
=================  ==========================================================================================

Nothing here imports torch; every writer streams or works on the small token-resolution heatmap.
"""
