// Loaded between require.js and embed-amd.js. The widget manager finds its fonts relative to where
// require.js believes its module lives (page-relative by default, so 404s below the top folder):
// point that module path at this folder, where the book vendors the manager and its fonts.
(function () {
  var here = document.currentScript.src;
  var folder = here.slice(0, here.lastIndexOf("/"));
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": folder } });
})();
