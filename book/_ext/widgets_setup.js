// Loaded between require.js and embed-amd.js. Each bundle inside the widget manager finds its fonts
// relative to where require.js believes its module lives (page-relative by default, so they 404 on
// pages below the top folder): point those module ids at this folder, where the book vendors the
// manager and its fonts. The modules are defined inline by embed-amd.js, so nothing is fetched.
(function () {
  var here = document.currentScript.src;
  var folder = here.slice(0, here.lastIndexOf("/"));
  require.config({
    // The longest matching prefix wins: the manager's own path, then every other widget module
    // (base, controls, output, …) so that none of them resolves relative to the page.
    paths: {
      "@jupyter-widgets/html-manager/dist": folder,
      "@jupyter-widgets": folder,
    },
  });
})();
