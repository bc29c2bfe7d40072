// The ipywidgets HTML manager typesets labels with MathJax 2's API (MathJax.Hub.Queue); the book
// loads MathJax 3, which has no Hub, so widgets on pages with math would throw. Forward the calls.
(function () {
  var mathjax = window.MathJax;
  if (!mathjax || mathjax.Hub || !mathjax.startup) return;
  mathjax.Hub = {
    Queue: function () {
      var elements = [];
      Array.prototype.forEach.call(arguments, function (job) {
        if (Array.isArray(job) && job[0] === "Typeset" && job[2]) elements.push(job[2]);
      });
      mathjax.startup.promise.then(function () { return mathjax.typesetPromise(elements); });
    },
  };
})();
