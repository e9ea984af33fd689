pub fn ensure(){}
