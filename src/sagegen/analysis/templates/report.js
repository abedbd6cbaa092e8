(function(){
  var box=document.getElementById('filter'), sel=document.getElementById('state');
  var n=document.getElementById('shown');
  function apply(){
    var q=box.value.toLowerCase(), s=sel.value, k=0;
    document.querySelectorAll('details.pair').forEach(function(d){
      var ok=(!q||d.getAttribute('data-text').indexOf(q)>=0)&&(!s||d.getAttribute('data-state')===s);
      d.style.display=ok?'':'none'; if(ok){k++;}
    });
    n.textContent=k;
  }
  box.addEventListener('input',apply); sel.addEventListener('change',apply); apply();
})();
