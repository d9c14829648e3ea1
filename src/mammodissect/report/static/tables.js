(function(){
"use strict";
for (const input of document.querySelectorAll("input[data-table]")){
  const table = document.getElementById(input.dataset.table);
  input.addEventListener("input", () => {
    const q = input.value.toLowerCase();
    for (const tr of table.tBodies[0].rows) tr.hidden = q !== "" && !tr.textContent.toLowerCase().includes(q);
  });
}
})();
