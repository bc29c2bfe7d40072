// Loaded between require.js and embed-amd.js. Each bundle inside the widget manager finds its fonts
// relative to where require.js believes its module lives (page-relative by default, so they 404 on
// pages below the top folder): point those module ids at this folder, where the book vendors the
// manager and its fonts. The modules are defined inline by embed-amd.js, so nothing is fetched.
(function () {
  var here = document.currentScript.src;
  var folder = here.slice(0, here.lastIndexOf("/"));
  require.config({
    paths: {
      "@jupyter-widgets/html-manager/dist": folder,
      "@jupyter-widgets/base": folder + "/base",
      "@jupyter-widgets/controls": folder + "/controls",
    },
  });
})();
