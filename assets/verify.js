(function () {
  var button = document.getElementById("copy");
  var token = document.getElementById("token");
  if (!button || !token) return;
  button.addEventListener("click", function () {
    var text = token.textContent;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { select(token); });
    } else {
      select(token);
    }
  });
  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Press Ctrl-C";
  }
})();
