// mingpian console: confirm destructive forms, select-all boxes. Nothing else runs here.
"use strict";
document.addEventListener("submit", (event) => {
  const form = event.target;
  const button = event.submitter;
  const ask = (button && button.dataset.confirm) || form.dataset.confirm;
  if (ask && !window.confirm(ask)) {
    event.preventDefault();
  }
});
document.addEventListener("change", (event) => {
  const box = event.target;
  if (box instanceof HTMLInputElement && box.classList.contains("all")) {
    const form = box.closest("form");
    if (form) {
      form.querySelectorAll("input[name=ids]").forEach((b) => { b.checked = box.checked; });
    }
  }
});
