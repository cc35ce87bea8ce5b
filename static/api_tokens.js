// The profile's API token section: copy a new token to the clipboard (it is shown only once).

const button = document.getElementById("copy-api-token");
const input = document.getElementById("new-api-token");
const status = document.getElementById("copy-api-token-status");

async function copyToken() {
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    status.textContent = button.dataset.copied;
  } catch (error) {
    console.warn("clipboard refused", error);
    status.textContent = button.dataset.failed;
  }
}

if (button && input && status) {
  button.addEventListener("click", copyToken);
}
