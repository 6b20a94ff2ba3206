// Portcullis session page: starts the vendored asciinema-player on each recorded
// shell. Without scripts the page still offers each recording for download.
"use strict";
(function () {
  if (!window.AsciinemaPlayer) return;
  for (const el of document.querySelectorAll("[data-cast]")) {
    window.AsciinemaPlayer.create(el.dataset.cast, el, {
      fit: "width",
      idleTimeLimit: 2,
      preload: true,
    });
  }
})();
