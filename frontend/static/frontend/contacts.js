// Private contacts on the profile page (frontend/templates/frontend/_private_contacts.html).
// The forms work without this script; it only asks before removing an address, stops a second
// submission while the first is on its way, and puts the cursor in the field that needs fixing.
(() => {
  const section = document.getElementById("contacts");
  if (!section) return;
  for (const form of section.querySelectorAll("form")) {
    form.addEventListener("submit", (event) => {
      const question = form.dataset.confirm;
      if (question && !window.confirm(question)) {
        event.preventDefault();
        return;
      }
      if (form.dataset.sending) {
        event.preventDefault();
        return;
      }
      form.dataset.sending = "1";
      for (const button of form.querySelectorAll("button")) button.setAttribute("aria-disabled", "true");
    });
  }
  const field = document.getElementById("contact-address");
  if (field && field.getAttribute("aria-invalid") === "true") {
    field.focus();
    section.scrollIntoView({block: "start"});
  }
  // Back from the browser's cache (bfcache): the forms can be sent again.
  window.addEventListener("pageshow", () => {
    for (const form of section.querySelectorAll("form")) delete form.dataset.sending;
  });
})();
