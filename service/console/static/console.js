// Asks before a form marked data-confirm is sent (deletes). The server does not rely on it.
document.addEventListener("submit", function (event) {
  var question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
